"""PatchCore anomaly detection, centralised and federated, with robust memory banks.

Public names: patch features (`make_patch_feature_fn`, `extract_patch_features`,
`anomaly_maps`), coreset selection (`greedy_coreset`, `coverage_radius`),
memory-bank scoring (`nearest_neighbor_scores`, `reweighted_image_scores`),
metrics (`image_auroc`, `pixel_auroc`, `aupro`), the federated memory
bank (`RobustnessConfig`, `build_global_bank`, coreset attacks, client scores,
the patch support filter), bank poisoning (`defect_injection`),
and a bank's evaluation on a test set (`evaluate_bank`, `image_metrics`,
`rows_in_bank`, `strategy_robustness`). The experiment of a config is
`robustfl_jax.experiments.patchcore`.
"""

from robustfl_jax.patchcore.coreset import coverage_radius, greedy_coreset, random_subset
from robustfl_jax.patchcore.features import (adaptive_avg_pool_matrix, anomaly_maps,
                                             combine_feature_maps, extract_patch_features,
                                             gaussian_blur, local_average, make_patch_feature_fn,
                                             standardize_intensity)
from robustfl_jax.patchcore.metrics import aupro, image_auroc, pixel_auroc, pro_curve
from robustfl_jax.patchcore.nearest_neighbor import (nearest_neighbor_scores, nearest_neighbors,
                                                     score_patches,
                                                     reweighted_image_scores)
from robustfl_jax.patchcore.federated import (CLIENT_METRICS, SCORING_METHODS, STRATEGIES,
                                              CoresetScores, RobustnessConfig, attack_coresets,
                                              build_global_bank, coordinatewise_bank,
                                              federated_coreset, local_coresets, num_trim_for,
                                              sample_per_client, score_clients,
                                              exclude_unsupported, support_distances, support_mask,
                                              unsupported_share_scores)
from robustfl_jax.patchcore.poisoning import defect_injection, select_defect_patches
from robustfl_jax.patchcore.evaluation import (evaluate_bank, image_metrics, rows_in_bank,
                                               strategy_robustness)
