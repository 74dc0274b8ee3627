// AwaitStep's "JavaScript example" (trigger) and "Polling example", from the
// platform document, changed only to read the base URL, key and connection id
// from the environment (and to call the one with the other's instanceId):
//   AWAITSTEP_BASE_URL=... AWAITSTEP_API_KEY=... AWAITSTEP_CONNECTION_ID=... node awaitstep.mjs
// The document's trigger answers {"instanceId"} and the poll takes that id:
// run the emulator with --awaitstep-trigger-reply instance.
const BASE = process.env.AWAITSTEP_BASE_URL ?? 'https://app.awaitstep.dev'
const API_KEY = process.env.AWAITSTEP_API_KEY
const CONNECTION_ID = process.env.AWAITSTEP_CONNECTION_ID

const response = await fetch(`${BASE}/api/workflows/wf_abc123/trigger`, {
  method: 'POST',
  headers: {
    Authorization: `Bearer ${API_KEY}`,
    'Content-Type': 'application/json',
  },
  body: JSON.stringify({
    connectionId: CONNECTION_ID,
    params: { orderId: 'ord_001' },
  }),
})

const { instanceId } = await response.json()
console.log('Run started:', instanceId)

async function waitForCompletion(workflowId, runId, apiKey, maxAttempts = 60) {
  for (let i = 0; i < maxAttempts; i++) {
    const res = await fetch(`${BASE}/api/workflows/${workflowId}/runs/${runId}`, {
      headers: { Authorization: `Bearer ${apiKey}` },
    })
    const run = await res.json()

    if (run.status === 'complete') return run
    if (run.status === 'errored') throw new Error(`Run failed: ${run.error}`)
    if (run.status === 'terminated') throw new Error('Run was terminated')

    // Wait 2 seconds before next poll
    await new Promise((resolve) => setTimeout(resolve, 2000))
  }
  throw new Error('Timed out waiting for run to complete')
}

const run = await waitForCompletion('wf_abc123', instanceId, API_KEY)
console.log('Run complete:', run.output)
