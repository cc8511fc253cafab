// A Conveyor client in another language: Node.js with @grpc/grpc-js, loading the
// contracts from protos/ at run time (no Python anywhere on this side).
//
// Usage: NODE_PATH=.tools/node_modules node client.js <address> <token> <proto dir> <googleapis dir>
// Prints one JSON object describing what it saw; tests/e2e/test_node_client.py checks it.
"use strict";
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [address, token, protoDir, googleDir] = process.argv.slice(2);
const options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
                  includeDirs: [protoDir, googleDir] };
const definition = protoLoader.loadSync(
  ["conveyor/queue/v1/service.proto", "conveyor/events/v1/service.proto"], options);
const loaded = grpc.loadPackageDefinition(definition);
const credentials = grpc.credentials.createInsecure();
const queue = new loaded.conveyor.queue.v1.WorkOrderQueueService(address, credentials);
const events = new loaded.conveyor.events.v1.EventStoreService(address, credentials);

// The rich error model, decoded as any language would: google.rpc.Status in the
// grpc-status-details-bin trailer, its details packed as google.protobuf.Any.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) =>
  target.startsWith("google/protobuf/") ? target : `${googleDir}/${target}`;
rpcTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpcTypes.lookupType("google.rpc.Status");

function richDetails(error) {
  const raw = error.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return [];
  return Status.decode(raw).details.map((any) => {
    const typeName = any.type_url.split("/").pop();
    const decoded = rpcTypes.lookupType(typeName).decode(any.value);
    return { type: typeName, ...rpcTypes.lookupType(typeName).toObject(decoded) };
  });
}

function call(client, method, request, withToken = true) {
  const metadata = new grpc.Metadata();
  if (withToken) metadata.set("authorization", `Bearer ${token}`);
  metadata.set("x-correlation-id", "node-client-1");
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, reply) =>
      error ? reject(error) : resolve(reply));
  });
}

async function failure(promise) {
  try {
    await promise;
    return { code: "OK" };
  } catch (error) {
    return { code: grpc.status[error.code], message: error.details, details: richDetails(error) };
  }
}

async function main() {
  const parent = "namespaces/interop/queues/jobs";
  const spec = { priority: 5, idempotency_key: "node-order-1",
                 payload: { data: Buffer.from("from node"), content_type: "text/plain" } };
  const first = await call(queue, "SubmitWorkOrder", { parent, work_order: spec });
  const again = await call(queue, "SubmitWorkOrder", { parent, work_order: spec });
  const leased = await call(queue, "LeaseWorkOrders", {
    parent: "namespaces/interop", queues: ["jobs"], max_work_orders: 10,
    wait_time: { seconds: 5 }, worker_identity: "node-worker" });
  const order = leased.work_orders[0];
  const done = await call(queue, "CompleteWorkOrder", {
    name: order.work_order.name, lease_token: order.lease_token,
    result: { data: Buffer.from("done"), content_type: "text/plain" } });
  const stale = await failure(call(queue, "CompleteWorkOrder", {
    name: order.work_order.name, lease_token: order.lease_token }));
  const invalid = await failure(call(queue, "SubmitWorkOrder", {
    parent, work_order: { priority: -1 } }));
  const anonymous = await failure(call(queue, "GetWorkOrder", { name: first.work_order.name }, false));
  const foreign = await failure(call(queue, "SubmitWorkOrder", {
    parent: "namespaces/elsewhere/queues/jobs", work_order: spec }));

  await call(events, "CreateTopic", { parent: "namespaces/interop", topic_id: "greetings" });
  const published = await call(events, "PublishEvents", {
    parent: "namespaces/interop/topics/greetings",
    events: [{ message_id: "hello-1", title: "Hello from Node",
               payload: { data: Buffer.from("{}"), content_type: "application/json" } }] });

  console.log(JSON.stringify({
    submitted: first.work_order.name,
    resubmitted: again.work_order.name,
    leased_payload: Buffer.from(order.work_order.spec.payload.data).toString(),
    completed_state: done.work_order.state,
    stale, invalid, anonymous, foreign,
    published_sequence: published.events[0].sequence,
  }));
  queue.close();
  events.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
