"""The face_embedding configs, registered under the mnet_tasks.configs entry points."""
