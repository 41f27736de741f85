"""The build cache beyond one machine: stage results as OCI artifacts in a registry.

- :mod:`.remote`: the API the engine and the ``cache`` commands use (lookup, pull, push, list);
- :mod:`.oci_artifact`: the artifact format and the local OCI layout it is staged in;
- :mod:`.pack`: a store object <-> artifact blobs (tar layers, sparse file chunks);
- :mod:`.skopeo`: the registry transport (``skopeo``, the containers/image client);
- :mod:`.signing`: SSH signatures (``ssh-keygen -Y``) over pushed entries.
"""
