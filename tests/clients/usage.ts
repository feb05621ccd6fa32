// What an application writes with openapi-typescript types and the openapi-fetch client, generated from
// /openapi.json into generated/schema.d.ts. tests/clients/test_generated_clients.py generates the types and
// runs `tsc --strict` on this file: each step must type-check as written, with no `any` and no cast.
// docs/guide/clients.md walks through the same steps.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/schema";

type Task = components["schemas"]["Task"];
type Problem = components["schemas"]["Problem"];
type Event = components["schemas"]["Event"];

export class ApiProblem extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
  }
}

export async function main(baseUrl: string, token: string): Promise<void> {
  // The media types this client reads: JSON and problems. Sparse lists (`fields=`) answer another one
  // (application/vnd.rampart.fields+json), left out here so that a page holds whole items.
  const api = createClient<paths, "application/json" | "application/problem+json">({
    baseUrl,
    headers: { Authorization: `Bearer ${token}` },
    // `status[in]=todo,done`, as the document describes `[in]` lists (explode: false)
    querySerializer: { array: { style: "form", explode: false } },
  });

  // Create: the answer is the item, every field typed and present.
  const project = await api.POST("/api/v1/projects", { body: { name: "Launch" } });
  if (project.error) throw new ApiProblem(project.error);
  const created = await api.POST("/api/v1/tasks", {
    body: { project_id: project.data.data.id, title: "Write the plan" },
  });
  if (created.error) throw new ApiProblem(created.error);
  const task: Task = created.data.data;
  const status: "todo" | "in_progress" | "done" = task.status;
  console.log(task.id, task.title, status, task.priority, task.due_date ?? "no due date", task.version);

  // List with filters, page by page with the cursor (same filters on every page).
  const seen: Task[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await api.GET("/api/v1/tasks", {
      params: {
        query: {
          project_id: project.data.data.id,
          "status[in]": ["todo", "in_progress"],
          "priority[gte]": 0,
          sort: "-priority,created_at",
          limit: 50,
          cursor,
        },
      },
    });
    if (page.error) throw new ApiProblem(page.error);
    seen.push(...page.data.data);
    if (page.data.meta.next_cursor === null) break;
    cursor = page.data.meta.next_cursor;
  }

  // Update with If-Match: the version read is the precondition; 412 means someone changed it since.
  const read = await api.GET("/api/v1/tasks/{id}", { params: { path: { id: task.id } } });
  const etag = read.response.headers.get("ETag") ?? "*";
  const changed = await api.PATCH("/api/v1/tasks/{id}", {
    params: { path: { id: task.id }, header: { "If-Match": etag } },
    body: { status: "done", priority: 3 },
  });
  if (changed.error?.code === "precondition_failed") {
    console.log("changed by someone else; read it again");
  } else if (changed.data) {
    console.log(changed.data.data.version === task.version + 1);
  }

  // A 422 as a problem: which field, and why.
  const refused = await api.POST("/api/v1/tasks", { body: { project_id: project.data.data.id, title: "" } });
  // The error is the Problem type itself (were it `never`, the comparison below would still compile).
  const asProblem: NonNullable<typeof refused.error> = {} as Problem;
  console.log(asProblem.code);
  if (refused.error?.code === "validation_failed") {
    for (const error of refused.error.errors ?? []) console.log(error.field, error.code, error.message);
  }

  // A 404 as a problem: absent and not visible are the same answer.
  const missing = await api.GET("/api/v1/tasks/{id}", { params: { path: { id: task.id } } });
  if (missing.error?.code === "not_found") console.log("no such task", missing.error.request_id);
  console.log(seen.length);
}

// The live stream: openapi-fetch hands over the body as a stream (a generated call would never return).
export async function follow(baseUrl: string, token: string, seen: (event: Event) => void): Promise<void> {
  const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
  const { response } = await api.GET("/api/v1/events/stream", {
    params: { query: { resource: "tasks" } },
    parseAs: "stream",
  });
  if (!response.ok || response.body === null) throw new Error(`the stream answered ${response.status}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return; // the session ended: sign in again, reconnect with Last-Event-ID
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = message.split("\n").find((line) => line.startsWith("data: "));
      if (data) seen(JSON.parse(data.slice(6)) as Event);
    }
  }
}
