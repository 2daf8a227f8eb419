"""The demo: a data set, a switch simulator and a live view, run by ``make run``."""
