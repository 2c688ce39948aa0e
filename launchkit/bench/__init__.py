"""`launchkit bench`: what the load generator sends (``requests``: each request encoded once), the
load generator (``loadgen``: closed and open loop on keep-alive connections), exact statistics (``stats``), a run's levels, trials and target (``runner``), the
`launchkit serve` a run starts (``server``), the server's own view from its /metrics
(``serverview``), report files and plots (``report``) and the CI gate (``compare``). No torch."""
