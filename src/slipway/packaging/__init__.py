"""Bundles: a registered version with everything needed to serve it anywhere.

``slipway package MODEL@VERSION`` writes a directory holding the verified artifact, a manifest,
a serving lock resolved by pip, slipway itself as a wheel, optional inference hooks with their
tests, a multi-stage Dockerfile, Kubernetes manifests and a README; ``slipway serve --bundle``
serves it. Modules: ``manifest`` (the bundle's description), ``lock`` (serving requirements and
the resolver), ``hooks`` (user ``preprocess``/``postprocess``), ``docker`` and ``kubernetes``
(the files handed to those tools), ``readme``, ``bundle`` (writing one), ``install`` (bringing
one into a registry) and ``record`` (the ``version.packaged`` event the registry keeps of it).
"""
