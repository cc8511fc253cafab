// Node.js submits a Python task by name (docs/sdk.md, "Wire format") and reads its result.
//
// Usage: NODE_PATH=.tools/node_modules node task.js <address> <proto dir> <googleapis dir>
// Prints {"state": ..., "content_type": ..., "result": <the task's JSON result>}.
"use strict";
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, protoDir, googleDir] = process.argv.slice(2);
const definition = protoLoader.loadSync(["conveyor/queue/v1/service.proto"], {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  includeDirs: [protoDir, googleDir] });
const loaded = grpc.loadPackageDefinition(definition);
const queue = new loaded.conveyor.queue.v1.WorkOrderQueueService(
  address, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve, reject) =>
    queue[method](request, new grpc.Metadata(), { deadline: Date.now() + 10000 },
                  (error, reply) => (error ? reject(error) : resolve(reply))));
}

async function main() {
  const body = JSON.stringify({ task: "add", args: [19], kwargs: { b: 23 } });
  const submitted = await call("SubmitWorkOrder", {
    parent: "namespaces/sdk/queues/tasks",
    work_order: { payload: { data: Buffer.from(body),
                             content_type: "application/vnd.conveyor.task+json" } } });
  const deadline = Date.now() + 60000;
  for (;;) {
    const { work_order } = await call("GetWorkOrder", { name: submitted.work_order.name });
    const state = work_order.state;
    if (!["WORK_ORDER_STATE_QUEUED", "WORK_ORDER_STATE_LEASED"].includes(state)) {
      console.log(JSON.stringify({
        state, content_type: work_order.result ? work_order.result.content_type : "",
        result: work_order.result ? JSON.parse(Buffer.from(work_order.result.data).toString()) : null,
      }));
      break;
    }
    if (Date.now() > deadline) throw new Error(`still ${state}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  queue.close();
}

main().catch((error) => { console.error(error); process.exit(1); });
