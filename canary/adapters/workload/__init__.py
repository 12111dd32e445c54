"""The primary Deployment, the three ClusterIP Services, scaling and promotion.

Pure builders (`build_primary_deployment`, `build_services`, `service_ports`, ...) turn a Canary
and its target Deployment into the objects we want; `Workloads` compares them with what is in
the cluster and writes only when a field we own differs, so an idle tick costs reads only.

Object shapes follow Flagger (see docs/design.md); differences on purpose:
* the primary's pod template carries `canary.dev/revision: <hash>` instead of a random id, so
  re-applying the same revision is a no-op;
* on promotion with an autoscaler the primary keeps its current replica count instead of
  falling back to the HPA minimum (Flagger #1600);
* `deployment.kubernetes.io/revision` and `kubectl.kubernetes.io/last-applied-configuration`
  are not copied from the target (they describe the target, and the first one belongs to the
  Deployment controller);
* a taken-over apex Service records its original selector and ports in
  `canary.dev/original-service`, which `finalize` (revertOnDeletion) restores;
* tracked ConfigMaps/Secrets may be copied under other names than `<name>-primary` when
  several Canaries share them (`config_copies`, see adapters/configs.py and docs/workloads.md).

The modules (everything is re-exported here; `canary.adapters.workload` is the import path):

* `common`: annotations, owner references, ownership checks, names, selector labels, config
  reference renaming (shared with the routers, configs and the autoscaler);
* `primary`: the primary Deployment's builders and `Workloads`, the applier;
* `services`: the Services' builders, comparisons and writes;
* `scaling`: scaling the target to zero and back.
"""

from canary.adapters.workload.common import (
    CANARY_API_VERSION,
    CANARY_KIND,
    FLUX_DISABLED,
    GITOPS_ANNOTATIONS,
    LAST_APPLIED,
    ORIGINAL_SERVICE_ANNOTATION,
    REPLICAS_ANNOTATION,
    REVISION_ANNOTATION,
    SELECTOR_LABELS,
    SIDECAR_CONTAINERS,
    WorkloadError,
    as_canary,
    check_target,
    config_renames,
    contains,
    controller_of,
    foreign_controller,
    is_owned_by,
    owner_references,
    primary_name,
    selector_label,
    service_name,
    without_flux_keys,
)
from canary.adapters.workload.scaling import (
    recorded_replicas,
    scale_target,
)
from canary.adapters.workload.services import (
    apply_service,
    build_services,
    revert_apex,
    reverted_service_spec,
    service_ports,
)
from canary.adapters.workload.primary import (
    FinalizeResult,
    Workloads,
    build_primary_deployment,
    primary_template,
)

__all__ = [
    "CANARY_API_VERSION",
    "CANARY_KIND",
    "FLUX_DISABLED",
    "FinalizeResult",
    "GITOPS_ANNOTATIONS",
    "LAST_APPLIED",
    "ORIGINAL_SERVICE_ANNOTATION",
    "REPLICAS_ANNOTATION",
    "REVISION_ANNOTATION",
    "SELECTOR_LABELS",
    "SIDECAR_CONTAINERS",
    "WorkloadError",
    "Workloads",
    "apply_service",
    "as_canary",
    "build_primary_deployment",
    "build_services",
    "check_target",
    "config_renames",
    "contains",
    "controller_of",
    "foreign_controller",
    "is_owned_by",
    "owner_references",
    "primary_name",
    "primary_template",
    "recorded_replicas",
    "revert_apex",
    "reverted_service_spec",
    "scale_target",
    "selector_label",
    "service_name",
    "service_ports",
    "without_flux_keys",
]
