"""The pytest plugin's parts: `settings` (where things are: the checkout, the runs
directory, a test's topology and its guests' commands), `running` (a System driven from a
test, its console and timeline, the run's artifacts). The hooks and fixtures are
`eeh_sriov.pytest_plugin` (entry point `pytest11: eeh_sriov`)."""
