from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'packnet_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.rviz') + glob('config/*.xml')),
        (f'share/{PACKAGE}/models', glob('models/*.ckpt')),
    ],
    # torch, numpy and opencv come from requirements.txt (venv) or rosdep (workspace);
    # listing torch here would let pip replace the pinned CPU wheel.
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='packnet_ros maintainers',
    maintainer_email='maintainers@packnet-ros.invalid',
    description='Metric monocular depth with PackNet-SfM for ROS 2',
    license='MIT',
    entry_points={
        'console_scripts': [
            'packnet-ros = packnet_ros.cli:main',
            'depth_node = packnet_ros.ros.nodes.depth_node:main',
            'lifecycle_depth_node = packnet_ros.ros.nodes.lifecycle_depth_node:main',
            'training_node = packnet_ros.ros.nodes.training_node:main',
            'bag_player = packnet_ros.ros.nodes.bag_player:main',
            'depth_evaluator = packnet_ros.ros.nodes.depth_evaluator:main',
        ],
    },
)
