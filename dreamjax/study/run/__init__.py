"""Running a study: the plan and its runner, each budget's context, cells, what the arms
do, shared models, the jobs as engine tasks, progress and the cost model, rechecks and
the validation-split choices."""
