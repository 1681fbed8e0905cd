"""What is recorded: the tables, the statuses of runs, nodes and gates with the transitions each
may make, and the one way to change a status, which writes its event."""
