"""Butane configs (``variant: fcos`` / ``openshift``): YAML with sugar, translated to Ignition.

:func:`imagebuilder.butane.translate.translate` does the work; :mod:`.schema` knows
the variants, versions and fields, :mod:`.yamlnode` reads YAML with positions,
:mod:`.rules` has Butane's own checks, :mod:`.sugar` renders the sugar and
:mod:`.openshift` the MachineConfig wrapper.
"""
