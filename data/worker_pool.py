"""Image work spread over forked processes (--check_images, --cache_images), that never leaves the
main process waiting on a dead worker.

multiprocessing.Pool loses the task of a worker that dies (a crash in a decoder, the OOM killer)
and waits for its result for ever; concurrent.futures' pool notices the death at once. Workers
are killed, not drained, when the main process stops early (an error, Ctrl-C, SIGTERM).
"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from utils.errors import UserError


@contextmanager
def worker_map(fn, jobs, num_workers, chunksize=16):
    """An iterator of fn(job) for each job, in order; computed in num_workers forked processes
    when num_workers > 0 (fn, a module-level function, is sent by name; what it reads is inherited
    by the fork), else here.

    A worker that dies raises a one-line UserError saying so; leaving the ``with`` block by any
    exception kills the workers.
    """
    jobs = list(jobs)
    if num_workers <= 0 or len(jobs) <= 1:
        yield map(fn, jobs)
        return
    pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context('fork'))
    try:
        yield pool.map(fn, jobs, chunksize=chunksize)
    except BrokenProcessPool:
        raise UserError('a worker process died while reading the images (killed, e.g. for lack of memory, '
                        'or crashed in an image decoder); run with --num_workers 0 to see the image') from None
    finally:
        for process in list((getattr(pool, '_processes', None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
