"""What a task becomes before anything runs: task specs, the Supervisor's plans, and the gate
policy that says which nodes wait for a human."""
