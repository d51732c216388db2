"""Camera geometry: intrinsics, lens distortion and rectification, SE(3) poses, view synthesis,
depth and its back-projection to points."""
from packnet_ros.geometry.camera import Camera, invert_intrinsics, pixel_grid, scale_intrinsics
from packnet_ros.geometry.depth import inv2depth
from packnet_ros.geometry.distortion import Calibration, Rectifier, RectifierCache, distort_image
from packnet_ros.geometry.points import depth_to_points
from packnet_ros.geometry.pose import euler_to_mat, invert_pose, pose_vec_to_mat, transform_points
from packnet_ros.geometry.view_synthesis import view_synthesis

__all__ = ['Calibration', 'Camera', 'Rectifier', 'RectifierCache', 'depth_to_points', 'distort_image',
           'euler_to_mat', 'inv2depth', 'invert_intrinsics', 'invert_pose', 'pixel_grid',
           'pose_vec_to_mat', 'scale_intrinsics', 'transform_points', 'view_synthesis']
