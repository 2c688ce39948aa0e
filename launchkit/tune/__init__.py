"""`launchkit tune`: the best serving configuration under a latency budget, measured (built on serve and bench)."""
