"""What the API reads: pages of runs, nodes, events, artifacts and gates, the live event feed,
and the gauges metrics scrape."""
