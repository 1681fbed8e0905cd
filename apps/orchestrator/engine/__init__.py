"""What moves runs forward: storing plans, the statements and steps of a worker's pass (start,
promote, claim, record outcomes, finish), leases, gates and the execution of one attempt."""
