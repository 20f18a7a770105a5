"""System checks for the project's own settings: a misconfiguration says what to set."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from channels_app.metrics_folder import folder_problem, problem_text


@checks.register()
def metrics_folder_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    # A warning, not an error: the processes run on (counting in memory), and an error would
    # also stop `migrate` and runserver over a monitoring matter.
    folder = settings.PROMETHEUS_MULTIPROC_DIR
    problem = folder and folder_problem(folder)
    if not problem:
        return []
    return [checks.Warning(problem_text(folder, problem), id="channels_app.W001")]
