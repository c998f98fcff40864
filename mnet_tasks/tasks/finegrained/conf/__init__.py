"""The finegrained configs, registered under the mnet_tasks.configs entry points."""
