"""Imported first by the shard writers' forkserver: it dies with the process that started it.

`multiprocessing`'s forkserver outlives its parent when the parent is killed
(SIGKILL gives it no chance to close the server's pipe), and so do the writer
processes it forked and its resource tracker. With PR_SET_PDEATHSIG the kernel
sends the forkserver SIGKILL when its parent dies; its writers follow theirs
the same way (orphans.die_with_parent), and the resource tracker exits once
every holder of its pipe is gone. Nothing else imports this module.
"""

from __future__ import annotations

from pipeline.runtime import orphans

orphans.die_with_parent()
