"""The pulsestream operator: reconciles ``StreamConfig`` objects into live settings.

A ``StreamConfig`` (``streamconfigs.pulsestream.io``) carries the live
settings both services watch. The operator validates it with the shared model
(:mod:`pulsestream.spec`, whose cross-field rules the CRD carries as CEL too),
renders the settings file into a ConfigMap the pods mount (:mod:`.rendering`),
reports ``status`` (:mod:`.conditions`) and, for changes that cannot apply
live, rolls the target's Deployments. The CRD itself is generated from the
shared settings model (:mod:`.crd`, ``make crd``).

Run it with ``pulsestream-operator`` (:mod:`.__main__`), configured by
``OPERATOR_*`` environment variables (:mod:`.settings`).
"""
