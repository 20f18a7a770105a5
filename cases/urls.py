from django.urls import path

from cases import views

app_name = "cases"
urlpatterns = [
    path("confirm/<str:token>/", views.confirm, name="confirm"),
]
