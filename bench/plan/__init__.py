"""Planning: what to run. Resolution of a run's fields (profile < dataset recipe < method recipe <
configuration label < user), the recipe table, presets and grid files, and the job graph that the
executors receive as (config, dependency ids) pairs."""
