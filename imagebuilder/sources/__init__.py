"""Root filesystem sources: the library code behind the ``org.imagebuilder.source.*`` stages."""
