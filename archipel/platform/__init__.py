"""Shared layers: settings, database, blob storage, jobs, identity, consent, access, audit, notify, portal.

Nothing in this package imports from ``archipel.radiology``, ``tiles``, ``wsi`` or ``mammo``.
"""
