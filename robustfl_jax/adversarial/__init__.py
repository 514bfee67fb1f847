"""Adversarial examples, adversarial training and certified robustness.

* :mod:`~robustfl_jax.adversarial.evasion`: ``fgsm``, ``pgd`` (L-inf / L2,
  random start, targeted), ``apgd`` (APGD-CE / DLR / targeted DLR),
  ``apgd_targeted`` (APGD-T) and the seed's ``simple_autoattack``; all jitted,
  on a batch, clipped to the input range.
* :mod:`~robustfl_jax.adversarial.evaluation`: ``robust_accuracy`` (an
  AutoAttack-style cascade) and ``make_pgd_eval_fn`` (PGD-20 on a test set).
* :mod:`~robustfl_jax.adversarial.training`: local objectives for the clients
  (Madry PGD, the seed's 50/50 mix, TRADES, Gaussian noise) for
  ``make_round_fn(..., train_loss=)``.
* :mod:`~robustfl_jax.adversarial.smoothing`: randomized smoothing
  (``smoothed_predict``, ``certify``, ``clopper_pearson_lower``).
"""

from robustfl_jax.adversarial.evasion import (NORMS, apgd, apgd_checkpoints,
                                              apgd_targeted, attack_loss,
                                              cross_entropy, dlr_loss, fgsm,
                                              pgd, pgd_step, project,
                                              simple_autoattack,
                                              targeted_dlr_loss)
from robustfl_jax.adversarial.evaluation import (default_attacks,
                                                 eval_logits_fn,
                                                 make_pgd_eval_fn,
                                                 robust_accuracy)
from robustfl_jax.adversarial.smoothing import (ABSTAIN, Certificate,
                                                binomial_two_sided_pvalue,
                                                certified_accuracy, certify,
                                                clopper_pearson_lower,
                                                sample_counts,
                                                smoothed_predict)
from robustfl_jax.adversarial.training import (METHODS, gaussian_noise_loss,
                                               madry_loss, make_train_loss,
                                               mix_loss, trades_loss)
