"""The Runs API's "Basic Request" in Python, from the platform document, changed only to
read the base URL, key and workflow id from the environment:

    RUNS_API_BASE_URL=... RUNS_API_KEY=... RUNS_API_WORKFLOW_ID=... python runs_api.py
"""

import os

import requests

base_url = os.environ.get("RUNS_API_BASE_URL", "http://localhost:3000")
api_key = os.environ["RUNS_API_KEY"]
workflow_id = os.environ["RUNS_API_WORKFLOW_ID"]

response = requests.post(
    f'{base_url}/api/v1/workflows/{workflow_id}/run',
    headers={
        'x-api-key': api_key,
        'Content-Type': 'application/json'
    },
    json={
        'input': {
            'customerId': 'cus_xxx',
            'amount': 9900
        }
    }
)
data = response.json()['data']
print(f"Run ID: {data['runId']}")
