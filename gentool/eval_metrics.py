"""The metric names ``[eval] metrics`` and ``gentool eval --metrics`` accept: one list, read by both.

Kept apart from :mod:`gentool.config` (which imports torch) so that the
command line's help, built when ``gentool --help`` starts, can name them.
"""

from __future__ import annotations

#: sample metrics (fid, isc, kid, prc), the classifier's class accuracy, the test loss and bits/dim
EVAL_METRICS = ("fid", "isc", "kid", "prc", "class_acc", "loss_t", "bpd")
