"""The tools built on the engine: they import minigen's engine and are never imported by it.

sweep.py         `minigen sweep`: a grid of training runs as jobs, their results side by side
jobs.py          running commands as jobs (Dask or local processes) with time and memory limits
assign.py        `minigen assign`: assignments made from the source, checked, graded
grade.py         grading student copies safely: the teacher's tests against only their minigen/
grade_runner.py  the grading subprocess (run as a script, never imported)
report.py        HTML pages: one per run, the tour's, runs side by side
tour.py          `minigen tour`: every family trained briefly, the lecture as one page
demos/           lecture demos (`minigen demo ar-vs-nar`)
"""
