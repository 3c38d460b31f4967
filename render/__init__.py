"""The cdk8s app that turns a fleet repository into the manifests Argo CD or Flux applies to the OCM hub.

`synth` builds the construct tree for one output target and returns the manifests; `render.output` writes them
as one file per resource. Import cost: this package starts a Node.js process (jsii) on first use of cdk8s, so
nothing on the training path imports it.
"""

from render.app import TARGETS, Manifest, synth, synth_all

__all__ = ["TARGETS", "Manifest", "synth", "synth_all"]
