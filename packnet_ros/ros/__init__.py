"""The ROS 2 side: thin nodes over the core, their processes, launch helpers and the demo."""
