"""TotalSegmentator v2 `total` class ids the phantom labels its anatomy with."""
from __future__ import annotations

TS = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6,
    "pancreas": 7, "adrenal_gland_right": 8, "adrenal_gland_left": 9,
    "lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14, "esophagus": 15, "trachea": 16,
    "small_bowel": 18, "colon": 20, "kidney_cyst_left": 23, "kidney_cyst_right": 24,
    "heart": 51, "aorta": 52, "spinal_cord": 79, "autochthon_left": 86, "autochthon_right": 87,
    "sternum": 116,
}
VERTEBRAE = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4"]
VERTEBRA_ID = {name: 43 - i for i, name in enumerate(VERTEBRAE)}  # T1=43 ... L4=28
RIB_ID = {("left", n): 91 + n for n in range(1, 13)} | {("right", n): 103 + n for n in range(1, 13)}
LUNG_LOBES = [TS["lung_upper_lobe_left"], TS["lung_lower_lobe_left"], TS["lung_upper_lobe_right"],
              TS["lung_middle_lobe_right"], TS["lung_lower_lobe_right"]]
