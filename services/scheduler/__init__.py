"""The scheduler: binds pending pods to nodes, as kube-scheduler's default profile does.

Read in this order:

- ``component``: ``Scheduler`` (start/stop/wait), leader election on the Lease
  ``kube-system/kube-scheduler``, ``/healthz`` and ``/metrics`` on loopback (``health``, ``metrics``);
- ``handlers``: informer events into the ``cache`` (nodes, and the pods on them, assumed ones
  included) and the ``queue`` (pending pods by priority, with backoff and re-queueing);
- ``cycle``: the loop that pops a pod, decides with ``algorithm`` (``filters``, then ``scores``,
  or ``preemption`` when nothing fits) and writes the outcome through ``binder``;
- ``podinfo`` and ``quantity``: a pod's requests and placement rules, parsed once;
- ``settings``: ``SchedulerSettings``; ``types``: the API and listers it relies on.
"""
