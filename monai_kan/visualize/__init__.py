"""Interpretability of KAN networks: plots of the learned edge functions, data ranges, importance and sensitivity;
overlay figures of segmentations (image, label, prediction: :mod:`monai_kan.visualize.overlay`).

Command line: ``python -m monai_kan.visualize <bundle dir or checkpoint> --out DIR`` (``--help`` for options).
"""

from .analysis import channel_ranges, curve_range, edge_functions, layer_summary, summaries, to_jsonable
from .export import visualize_network
from .loading import load_network, load_state_dict_file
from .overlay import SaveOverlayd, overlay_figure, save_overlay_png
from .plot import figure_to_array, plot_edge_kernel, plot_importance, plot_layer_edges

__all__ = [
    "SaveOverlayd",
    "channel_ranges",
    "curve_range",
    "edge_functions",
    "figure_to_array",
    "layer_summary",
    "load_network",
    "load_state_dict_file",
    "overlay_figure",
    "plot_edge_kernel",
    "plot_importance",
    "plot_layer_edges",
    "save_overlay_png",
    "summaries",
    "to_jsonable",
    "visualize_network",
]
