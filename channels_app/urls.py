from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from channels_app.health import healthz
from channels_app.metrics import metrics

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("", include("cases.urls")),
]
