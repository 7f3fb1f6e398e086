"""A tiny random-weight nnU-Net in TotalSegmentator's weights layout (tests only).

It has TotalSegmentator v2 `total`'s 117 classes + background and the real trainer
name, so TotalSegmentator's own API runs end to end on CPU in seconds. Its masks
are meaningless; tests check code path, shapes, label ids and geometry.
"""
from __future__ import annotations

import json
from pathlib import Path

TRAINER = "nnUNetTrainer_4000epochs_NoMirroring"
ARCH_KWARGS = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


def _plans(dataset_name: str, spacing_mm: float) -> dict:
    resample = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [spacing_mm] * 3,
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3000.0, "mean": 80.0, "median": 60.0, "min": -1024.0,
            "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 250.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": [32, 32, 32],
            "median_image_size_in_voxels": [64, 64, 64],
            "spacing": [spacing_mm] * 3,
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": resample,
            "resampling_fn_seg": resample,
            "resampling_fn_probabilities": resample,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": ARCH_KWARGS,
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": True,
        }},
    }


def build_tiny_totalseg_home(home: str | Path, task_ids=(297, 298), seed: int = 0) -> Path:
    """Write tiny models for the given TotalSegmentator task ids under home/nnunet/results."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.map_to_binary import class_map

    home = Path(home)
    labels = {"background": 0, **{name: int(i) for i, name in class_map["total"].items()}}
    torch.manual_seed(seed)
    for task_id in task_ids:
        folder = TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"]
        spacing = 6.0 if task_id == 298 else 3.0
        model_dir = home / "nnunet" / "results" / folder / f"{TRAINER}__nnUNetPlans__3d_fullres"
        (model_dir / "fold_0").mkdir(parents=True, exist_ok=True)
        (model_dir / "plans.json").write_text(json.dumps(_plans(folder, spacing), indent=1))
        (model_dir / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}, indent=1))
        net = get_network_from_plans(
            "dynamic_network_architectures.architectures.unet.PlainConvUNet", dict(ARCH_KWARGS),
            ["conv_op", "norm_op", "dropout_op", "nonlin"], 1, len(labels), allow_init=True,
            deep_supervision=False)
        torch.save({
            "network_weights": net.state_dict(),
            "init_args": {"plans": None, "configuration": "3d_fullres", "fold": 0, "dataset_json": None},
            "trainer_name": TRAINER,
            "inference_allowed_mirroring_axes": None,
        }, model_dir / "fold_0" / "checkpoint_final.pth")
    (home / "config.json").write_text(json.dumps(
        {"totalseg_id": "totalseg_test", "send_usage_stats": False, "prediction_counter": 0,
         "statistics_disclaimer_shown": True}, indent=1))
    return home
