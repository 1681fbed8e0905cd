"""Tasks: submitting one plans it and queues its run for the workers."""

from fastapi import APIRouter, BackgroundTasks, Request, Response

from apps.api.auth import OperatorCaller, forbidden_below
from apps.api.dependencies import DbSession
from apps.api.responses import errors, located
from apps.api.routing import ProtectedRoute
from apps.orchestrator.engine import submission
from apps.orchestrator.model.models import KeyRole
from apps.orchestrator.plans.task_specs import TaskRequest
from apps.orchestrator.reading import runs
from apps.wire.schemas import Run

router = APIRouter(tags=["tasks"], route_class=ProtectedRoute)

# The largest plan a task spec allows (500 nodes with 20,000-character prompts) is about 10 MB
# of JSON; a body larger than this is refused before it is read.
MAX_TASK_BYTES = 16 * 1024 * 1024


@router.post(
    "/tasks",
    status_code=202,
    max_body_size=MAX_TASK_BYTES,
    responses={
        **located(202, "The new run's URL."),
        **forbidden_below(KeyRole.OPERATOR),
        **errors(422, described={422: "The task spec is invalid; `detail` says where and why."}),
    },
)
async def submit_task(
    caller: OperatorCaller,
    task: TaskRequest,
    session: DbSession,
    request: Request,
    response: Response,
    background: BackgroundTasks,
) -> Run:
    """Plan a task and queue its run; `Location` is the run's URL. Needs an operator key."""
    run_id = await submission.submit_task(
        session, task, created_by=caller.name, settings=request.app.state.settings
    )
    run = await runs.get_run(await session.connection(), run_id)
    response.headers["Location"] = f"/runs/{run_id}"
    if request.app.state.worker is not None:
        # After the response, so after the commit: the worker finds the run on its next look.
        background.add_task(request.app.state.worker.wake)
    return Run.model_validate(run)
