"""What an application writes with the Python client that openapi-python-client generates from
/openapi.json (package `rampart_client`). tests/clients/test_generated_clients.py generates the client and
runs `mypy --strict` on this file: each step must type-check exactly as written, with no cast and no
`# type: ignore`. docs/guide/clients.md walks through the same steps.
"""

from __future__ import annotations

from typing import TypeVar

from rampart_client import AuthenticatedClient
from rampart_client.api.projects import projects_create
from rampart_client.api.tasks import tasks_create, tasks_get, tasks_list, tasks_update
from rampart_client.models import (
    Problem,
    ProblemCode,
    ProjectCreate,
    ProjectResponse,
    Task,
    TaskCreate,
    TaskPage,
    TaskResponse,
    TaskStatus,
    TaskUpdate,
)
from rampart_client.types import UNSET


class ApiProblem(Exception):
    """A problem answer, raised: `code` is an enum to switch on."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.code.value}: {problem.detail}")
        self.problem = problem


T = TypeVar("T")


def ok(answer: T | Problem | None) -> T:
    """The success body, or the problem raised."""
    if isinstance(answer, Problem):
        raise ApiProblem(answer)
    if answer is None:
        raise RuntimeError("an undocumented status")
    return answer


def main(base_url: str, token: str) -> None:
    client = AuthenticatedClient(base_url=base_url, token=token)

    # Create: the answer is the item, every field typed and present (no Unset).
    project: ProjectResponse = ok(projects_create.sync(client=client, body=ProjectCreate(name="Launch")))
    created = ok(
        tasks_create.sync(client=client, body=TaskCreate(project_id=project.data.id, title="Write the plan"))
    )
    task: Task = created.data
    status: TaskStatus = task.status
    print(task.id, task.title, status.value, task.priority, task.due_date, task.version)

    # List with filters, page by page with the cursor (same filters on every page).
    cursor: str | None = None
    seen: list[Task] = []
    while True:
        page: TaskPage = ok(
            tasks_list.sync(
                client=client,
                project_id=project.data.id,
                statusin=[TaskStatus.TODO, TaskStatus.IN_PROGRESS],
                prioritygte=0,
                sort="-priority,created_at",
                limit=50,
                cursor=cursor if cursor is not None else UNSET,
            )
        )
        seen += page.data
        if page.meta.next_cursor is None:
            break
        cursor = page.meta.next_cursor

    # Update with If-Match: the version read is the precondition; 412 means someone changed it since.
    read = tasks_get.sync_detailed(task.id, client=client)
    etag = read.headers["ETag"]
    changed = tasks_update.sync(
        task.id, client=client, body=TaskUpdate(status=TaskStatus.DONE, priority=3), if_match=etag
    )
    if isinstance(changed, Problem) and changed.code is ProblemCode.PRECONDITION_FAILED:
        print("changed by someone else; read it again")
    elif isinstance(changed, TaskResponse):
        assert changed.data.version == task.version + 1

    # A 422 as a problem: which field, and why.
    refused = tasks_create.sync(client=client, body=TaskCreate(project_id=project.data.id, title=""))
    if isinstance(refused, Problem):
        assert refused.code is ProblemCode.VALIDATION_FAILED
        for error in refused.errors or []:
            print(error.field, error.code, error.message)

    # A 404 as a problem: absent and not visible are the same answer.
    missing = tasks_get.sync(task.id, client=client)
    if isinstance(missing, Problem) and missing.code is ProblemCode.NOT_FOUND:
        print("no such task", missing.request_id)
