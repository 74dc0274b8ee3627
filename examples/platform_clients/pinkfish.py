"""Pinkfish's "Complete Examples / Python", from the platform document, changed only to
read the base URL, key and trigger id from the environment:

    PINKFISH_BASE_URL=... PINKFISH_API_KEY=... PINKFISH_TRIGGER_ID=... python pinkfish.py
"""

import os
import time

import requests

API_KEY = os.environ["PINKFISH_API_KEY"]
TRIGGER_ID = os.environ["PINKFISH_TRIGGER_ID"]
BASE = os.environ.get("PINKFISH_BASE_URL", "https://triggers.app.pinkfish.ai")


def trigger_and_poll(payload):
    # Step 1: Fire the trigger
    res = requests.post(
        f"{BASE}/ext/triggers/{TRIGGER_ID}",
        headers={
            "Content-Type": "application/json",
            "X-API-KEY": API_KEY,
            "x-api-wait": "false",
        },
        json=payload,
    )

    run_id = res.headers["X-Pf-Run-Id"]
    automation_id = res.headers["X-Pf-Automation-Id"]

    # Step 2: Poll for status
    while True:
        status_res = requests.get(
            f"{BASE}/ext/webhook/{API_KEY}/runs/{automation_id}/{run_id}/status"
        )
        status = status_res.json()["status"]

        if status == "COMPLETE":
            break
        if status in ("FAILED", "TIMEOUT"):
            raise Exception(f"Workflow ended with status: {status}")

        time.sleep(3)

    # Step 3: Fetch results
    results_res = requests.get(
        f"{BASE}/ext/webhook/{API_KEY}/runs/{automation_id}/{run_id}/results"
    )
    return results_res.json()


results = trigger_and_poll({"user_request": "process this data"})
print(results)
