"""Geometry: round trips, identity warps and a hand-computed warp of a fronto-parallel plane."""
import math

import numpy as np
import pytest
import torch

from packnet_ros.geometry import (
    Camera,
    depth_to_points,
    euler_to_mat,
    inv2depth,
    invert_pose,
    pixel_grid,
    pose_vec_to_mat,
    scale_intrinsics,
    transform_points,
    view_synthesis,
)
from packnet_ros.geometry.depth import MIN_INVERSE_DEPTH

from helpers import load_fixture

K = torch.tensor([[[100.0, 0.0, 31.5], [0.0, 90.0, 15.5], [0.0, 0.0, 1.0]]])


def test_scale_intrinsics_keeps_pixel_edges():
    # Halving a 64-wide image: focal halves; centre 31.5 (middle of 0..63) -> 15.5 (middle of 0..31)
    Ks = scale_intrinsics(K, 0.5)
    assert torch.allclose(Ks[0], torch.tensor([[50.0, 0, 15.5], [0, 45.0, 7.5], [0, 0, 1]]))
    assert torch.equal(K[0, 0, 0], torch.tensor(100.0))  # input untouched


def test_reconstruct_then_project_returns_pixels():
    depth = 1 + 20 * torch.rand(2, 1, 32, 64)
    cam = Camera(K.repeat(2, 1, 1))
    uv = cam.project_pixels(cam.reconstruct(depth))
    grid = pixel_grid(2, 32, 64, torch.float32, torch.device('cpu'))
    assert torch.allclose(uv.permute(0, 3, 1, 2), grid[:, :2], atol=1e-3)


def test_reconstruct_gives_depth_as_z():
    depth = 1 + 10 * torch.rand(1, 1, 8, 8)
    assert torch.allclose(Camera(K).reconstruct(depth)[:, 2:], depth)


def test_identity_warp_returns_image_for_any_depth():
    image = torch.rand(1, 3, 32, 64)
    depth = 0.5 + 50 * torch.rand(1, 1, 32, 64)
    warped = view_synthesis(image, depth, K, torch.eye(4)[None])
    assert torch.allclose(warped, image, atol=1e-5)


def test_translation_shifts_plane_by_f_t_over_z():
    # Texture varying along x only; the reference camera sits tx to the right, so a point
    # at target pixel u appears in the reference image at u - fx * tx / Z.
    h, w, z, tx = 32, 64, 10.0, 0.4
    xs = torch.arange(w, dtype=torch.float32)
    ref = torch.sin(xs / 3.0).expand(1, 3, h, w).contiguous()
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = -tx  # target -> reference: points move by -tx when the camera moves +tx
    warped = view_synthesis(ref, torch.full((1, 1, h, w), z), K, T)
    shift = 100.0 * tx / z  # 4 pixels
    expected = torch.sin((xs - shift) / 3.0)
    inside = xs >= shift
    assert torch.allclose(warped[0, 0, 5, inside], expected[inside], atol=1e-4)
    assert torch.all(warped[0, 0, 5, xs < shift - 1] == 0)  # zero padding outside the reference


def test_euler_matches_hand_rotation_and_is_orthonormal():
    R = euler_to_mat(torch.tensor([[0.0, 0.0, math.pi / 2]]))[0]
    assert torch.allclose(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)
    angles = torch.randn(5, 3)
    Rs = euler_to_mat(angles)
    assert torch.allclose(Rs @ Rs.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(Rs), torch.ones(5), atol=1e-5)


def test_invert_pose_round_trip():
    T = pose_vec_to_mat(torch.randn(4, 6))
    assert torch.allclose(invert_pose(T) @ T, torch.eye(4).expand(4, 4, 4), atol=1e-5)
    points = torch.randn(4, 3, 5, 7)
    assert torch.allclose(transform_points(invert_pose(T), transform_points(T, points)), points, atol=1e-5)


def test_pose_vec_to_mat_matches_original():
    fixture = load_fixture('loss_fixture.pt')
    for j in range(2):
        got = pose_vec_to_mat(fixture['pose_vecs'][:, j])
        assert torch.allclose(got, fixture['pose_mats_target_to_context'][:, j], atol=1e-6)


def test_inv2depth_inverts_and_keeps_a_zero_head_finite():
    depth = inv2depth(torch.tensor([0.5, 0.01, 0.0]))
    assert depth.tolist() == pytest.approx([2.0, 100.0, 1 / MIN_INVERSE_DEPTH])


def test_points_are_back_projected_depth_with_packed_colour():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    K = np.array([[10.0, 0, 3.5], [0, 12.0, 2.0], [0, 0, 1]])
    depth = rng.uniform(1, 5, size=(6, 8)).astype(np.float32)
    depth[0, 0] = np.nan
    points = depth_to_points(depth, rgb, K)
    v, u = 4, 6
    d = depth[v, u]
    np.testing.assert_allclose(points[v, u, :3], [(u - 3.5) / 10 * d, (v - 2.0) / 12 * d, d], rtol=1e-6)
    r, g, b = rgb[v, u]
    assert points[v, u, 3:].view(np.uint32)[0] == (int(r) << 16) | (int(g) << 8) | int(b)
    assert np.isnan(points[0, 0, :3]).all()
    strided = depth_to_points(depth, rgb, K, stride=2)
    assert strided.shape == (3, 4, 4) and strided[2, 3, 2] == depth[4, 6]
