"""The pod: the Celery app and tasks a GPU pod runs, over the pod runtime in `tasks.pod`.

`celery -A tasks worker -Q gpu` finds the app in `tasks.celery` (Celery's own layout), which
loads the task modules only in a worker (`include`): the dispatcher sends `tasks.run_experiment`
by name through `tasks.sender` and never imports the pipeline. The task is only a wake-up: the
run document is the truth, the claim makes a duplicate delivery a no-op, and the sweeper
recovers a run whose worker died.
"""
