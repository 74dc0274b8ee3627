// The Runs API's "Basic Request" in JavaScript and its "Checking Run Status"
// waitForCompletion, from the platform document, changed only to read the base
// URL, key and workflow id from the environment (and to wait on the run started):
//   RUNS_API_BASE_URL=... RUNS_API_KEY=... RUNS_API_WORKFLOW_ID=... node runs_api.mjs
const BASE = process.env.RUNS_API_BASE_URL ?? 'http://localhost:3000';
const API_KEY = process.env.RUNS_API_KEY;
const workflowId = process.env.RUNS_API_WORKFLOW_ID;

const response = await fetch(
`${BASE}/api/v1/workflows/${workflowId}/run`,
{
method: 'POST',
headers: {
'x-api-key': API_KEY,
'Content-Type': 'application/json'
},
body: JSON.stringify({
input: {
customerId: 'cus_xxx',
amount: 9900
}
})
}
);
const { data } = await response.json();
console.log('Run ID:', data.runId);

async function waitForCompletion(runId, maxWait = 60000) {
const start = Date.now();
while (Date.now() - start < maxWait) {
const response = await fetch(
`${BASE}/api/v1/runs/${runId}`,
{ headers: { 'x-api-key': API_KEY } }
);
const { data } = await response.json();
if (data.status === 'completed') {
return data.output;
}
if (data.status === 'failed') {
throw new Error(data.error?.message || 'Workflow failed');
}
// Wait 1 second before polling again
await new Promise(r => setTimeout(r, 1000));
}
throw new Error('Timeout waiting for workflow');
}

console.log('Output:', JSON.stringify(await waitForCompletion(data.runId)));
