// inferq's HTTP gateway from Node.js (20+), with nothing but the built-in fetch.
//
//   INFERQ_URL=http://127.0.0.1:8000 INFERQ_API_KEY=secret node examples/node/infer.mjs
//
// 1. reads the model's metadata (its inputs' names, datatypes and shapes),
// 2. runs one input synchronously (POST .../infer, JSON tensors),
// 3. submits another as an asynchronous job (POST .../jobs) and polls GET /v2/jobs/{id},
//    waiting as long as each answer's Retry-After asks, until the job is done.
// The inputs are random numbers shaped as the metadata says (each run is a fresh input,
// so the job is computed, not answered from inferq's cache).
//
// Environment: INFERQ_URL (default http://127.0.0.1:8000), INFERQ_API_KEY (when the
// gateway has keys), INFERQ_MODEL (default digits), INFERQ_VERSION (an inferq variant:
// fp32, int8, ...; default: the model's default). With --json it prints one JSON
// document (inputs sent, outputs received) instead of the report.

const BASE = (process.env.INFERQ_URL ?? "http://127.0.0.1:8000").replace(/\/+$/, "");
const MODEL = process.env.INFERQ_MODEL ?? "digits";
const VERSION = process.env.INFERQ_VERSION;
const HEADERS = { "Content-Type": "application/json" };
if (process.env.INFERQ_API_KEY) HEADERS.Authorization = `Bearer ${process.env.INFERQ_API_KEY}`;
const MODEL_PATH = `/v2/models/${encodeURIComponent(MODEL)}` +
  (VERSION ? `/versions/${encodeURIComponent(VERSION)}` : "");
const JSON_OUT = process.argv.includes("--json");
const POLL_LIMIT_MS = 60_000;

// Every gateway error is {"error": "message"}, with an HTTP status that says whose fault.
async function call(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: HEADERS,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000), // the gateway answers /infer within its own bound
  });
  const doc = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${doc.error ?? JSON.stringify(doc)}`);
  return { status: res.status, headers: res.headers, doc };
}

// One input of batch size 1, shaped and typed as the metadata says (-1: dynamic, here 1).
function randomInput(spec) {
  const shape = spec.shape.map((d) => (d < 0 ? 1 : d));
  shape[0] = 1; // the leading dimension is the batch
  const n = shape.reduce((a, b) => a * b, 1);
  const value = spec.datatype.startsWith("FP") ? () => Math.random()
    : spec.datatype === "BOOL" ? () => Math.random() < 0.5
    : () => Math.floor(Math.random() * 100); // integers: small, valid for any width
  return { name: spec.name, shape, datatype: spec.datatype, data: Array.from({ length: n }, value) };
}

const log = (...args) => { if (!JSON_OUT) console.log(...args); };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function show(outputs) {
  for (const o of outputs) {
    const top = o.data.indexOf(Math.max(...o.data));
    log(`  ${o.name} ${o.datatype}[${o.shape}]: argmax ${top}, first values ${o.data.slice(0, 4).map((v) => +v.toPrecision(3))}`);
  }
}

async function main() {
  // 1. Metadata: what to send.
  const meta = (await call("GET", MODEL_PATH)).doc;
  log(`model ${meta.name} (versions ${meta.versions.join(", ")}, platform ${meta.platform})`);
  for (const t of meta.inputs) log(`  input  ${t.name} ${t.datatype}[${t.shape}]`);
  for (const t of meta.outputs) log(`  output ${t.name} ${t.datatype}[${t.shape}]`);

  // 2. Synchronous inference: the answer holds the outputs (shape [1, ...]).
  const inferInputs = meta.inputs.map(randomInput);
  const inferred = (await call("POST", `${MODEL_PATH}/infer`, { id: "node-1", inputs: inferInputs })).doc;
  log(`infer (id ${inferred.id}, version ${inferred.model_version}, cached ${inferred.parameters.cached}):`);
  show(inferred.outputs);

  // 3. An asynchronous job: 202 + Location, then poll. (200 at once when it was cached;
  // a "Prefer: wait=5" header would hold the POST up to 5 s for the result instead.)
  const jobInputs = meta.inputs.map(randomInput);
  let answer = await call("POST", `${MODEL_PATH}/jobs`, { inputs: jobInputs });
  const location = answer.headers.get("location") ?? answer.doc.location;
  log(`job ${answer.doc.id}: ${answer.status} ${answer.doc.status}`);
  const started = Date.now();
  let polls = 0;
  while (answer.doc.status === "queued" || answer.doc.status === "running") {
    if (Date.now() - started > POLL_LIMIT_MS) throw new Error(`job ${answer.doc.id} not done in ${POLL_LIMIT_MS} ms`);
    const waitS = Number(answer.headers.get("retry-after") ?? 1);
    await sleep(1000 * (Number.isFinite(waitS) ? waitS : 1));
    answer = await call("GET", location);
    polls += 1;
    log(`  poll ${polls}: ${answer.doc.status}`);
  }
  const job = answer.doc;
  if (job.status !== "success") throw new Error(`job ${job.id} ended ${job.status}: ${job.error}`);
  log(`job done: queue ${job.timing.queue_ms.toFixed(2)} ms, compute ${job.timing.compute_ms.toFixed(2)} ms, cached ${job.cached}`);
  show(job.outputs);

  if (JSON_OUT) {
    console.log(JSON.stringify({
      metadata: meta,
      infer: { inputs: inferInputs, response: inferred },
      job: { inputs: jobInputs, state: job, polls, elapsed_ms: Date.now() - started },
    }));
  }
}

main().catch((err) => {
  // fetch's own failures (refused, timed out) keep the reason in err.cause.
  console.error(`infer.mjs: ${err.message}${err.cause ? ` (${err.cause.message ?? err.cause})` : ""}`);
  process.exit(1);
});
