# Search targets (validated when the workflow is parsed) and the search rules' input functions.
from archscale.search import SearchError, check_target_feasible

try:
    SEARCH = STUDY.search_targets
    SEARCH_SETTINGS = STUDY.search_settings
    for _target in SEARCH.values():
        # A scale that admits no architecture at all fails here, before any job runs.
        check_target_feasible(_target, SEARCH_SETTINGS)
except (ConfigError, SearchError) as exc:
    raise WorkflowError(f"config error: {exc}") from None


def search_target(wildcards):
    return SEARCH[wildcards.target].to_dict()


def candidate_workload():
    """The throughput workload of the search's measurements (shape only: random weights)."""
    return {**throughput_workload(), "weights": "random"}
