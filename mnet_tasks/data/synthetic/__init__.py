"""Generated datasets that let the suite run without downloading anything."""

from mnet_tasks.data.synthetic.shapes import DATASET_NAME, SHAPE_NAMES, generate_shapes, shapes_folder_name

__all__ = ["DATASET_NAME", "SHAPE_NAMES", "generate_shapes", "shapes_folder_name"]
