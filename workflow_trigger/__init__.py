"""workflow_trigger: trigger remote workflows and wait for their results."""
