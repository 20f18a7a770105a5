from django.contrib.auth import views as auth_views
from django.urls import include, path

from cases.views import actions, cases, confirm, messages

# The agent workspace, under /cases/. The confirm page stays at /confirm/: its address is in
# mail already sent.
workspace = [
    path("", cases.case_list, name="list"),
    path("<int:pk>/", cases.case_detail, name="detail"),
    path("<int:pk>/states/", cases.case_states, name="states"),
    path("messages/<int:pk>/body/", messages.message_body, name="message_body"),
    path("messages/<int:pk>/raw/", messages.message_raw, name="message_raw"),
    path("attachments/<int:pk>/", messages.attachment_download, name="attachment"),
    path("<int:pk>/reply/", actions.reply, name="reply"),
    path("<int:pk>/state/", actions.state_set, name="state_set"),
    path("<int:pk>/assign/", actions.assign, name="assign"),
    path("<int:pk>/split/", actions.split, name="split"),
    path("<int:pk>/merge/", actions.merge, name="merge"),
    path("<int:pk>/tasks/", actions.task_add, name="task_add"),
    path("tasks/<int:pk>/done/", actions.task_finish, name="task_done"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]

app_name = "cases"
urlpatterns = [
    path("confirm/<str:token>/", confirm.confirm, name="confirm"),
    path("cases/", include(workspace)),
]
