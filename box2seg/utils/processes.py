"""Runs side by side in spawned processes: on 2 CPU cores two small trainings with one torch thread each finish
sooner than one after the other with two threads (PyTorch's CPU kernels scale poorly from 1 to 2 threads at
these sizes; bench/RESULTS.md: Box2Seg seeds 1.28x, the demo's two Mask R-CNN runs 4.3 against 6.6 min)."""
import multiprocessing
import time

__all__ = ["run_side_by_side"]


def run_side_by_side(target, jobs_args, jobs, describe=repr):
    """Calls ``target(*args)`` for each tuple of ``jobs_args``, ``jobs`` spawned processes at a time (a spawned
    process starts from a fresh interpreter: ``target`` must be importable and set up its own datasets, logging
    and torch threads). Returns each item's wall seconds (its group's). A process that exits non-zero raises
    RuntimeError naming ``describe(args)`` of every failed item, after its group has ended."""
    # Not a Pool: pool workers are daemonic and could not start DataLoader workers of their own.
    ctx = multiprocessing.get_context("spawn")
    seconds = []
    for i in range(0, len(jobs_args), jobs):
        group = jobs_args[i:i + jobs]
        start = time.time()
        procs = [ctx.Process(target=target, args=tuple(args)) for args in group]
        try:
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
        finally:  # interrupted (Ctrl-C, an error): no run is left going on without its parent
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
        failed = [f"{describe(args)} (exit code {proc.exitcode})" for args, proc in zip(group, procs) if proc.exitcode != 0]
        if failed:
            raise RuntimeError("failed: " + "; ".join(failed))
        seconds += [time.time() - start] * len(group)
    return seconds
