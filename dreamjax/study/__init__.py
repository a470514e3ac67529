"""The study: every claim of the seed answer as a measured experiment.

``run/`` runs a study and ``report/`` reports it. Both read what stands here:
the protocol (``claims``, ``evidence``, ``rules_v1``), what a workdir records
(``records``) and what the config asks for (``spec``).
"""
