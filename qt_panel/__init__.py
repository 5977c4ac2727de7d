"""RollingDepth panel: a Qt front-end for tuning depth on a plate (`rollingdepth-panel`).

A thin adapter over the engine: `rollingdepth_core.session.DepthSession` does the work and keeps
what is expensive; the panel shows frames, runs jobs off the GUI thread and exports EXRs.
"""
