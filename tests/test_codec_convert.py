"""The official checkpoint converter, against a model built with the official layout and names.

``OfficialLayoutJSCC`` below reproduces the module tree of the official DiffJSCC CNN JSCC
(``E.net`` / ``E.res_list`` / ``E.projection``, ``G.mask_conv`` / ``G.res_list`` / ``G.model``)
and its forward pass, so the names, index positions and numerics of the conversion are
checked without the official code.
"""

import pytest
import torch
from diffjscc.convert import convert_official_jscc, load_official_jscc, main
from diffjscc.errors import ConfigError
from diffjscc.models.jscc import DeepJSCC
from torch import nn


class _Res(nn.Module):
    def __init__(self, dim, reflect):
        super().__init__()
        layers = []
        for last in (False, True):
            if reflect:
                layers.append(nn.ReflectionPad2d(1))
            layers += [
                nn.Conv2d(dim, dim, 3, padding=0 if reflect else 1, bias=False),
                nn.BatchNorm2d(dim),
            ]
            if not last:
                layers.append(nn.ReLU(True))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class _Mod(nn.Module):
    def __init__(self, dim, extend):
        super().__init__()
        self.model_multi = nn.Sequential(
            nn.Linear(dim + extend, dim), nn.ReLU(True), nn.Linear(dim, dim), nn.Sigmoid()
        )
        self.model_add = nn.Sequential(
            nn.Linear(dim + extend, dim), nn.ReLU(True), nn.Linear(dim, dim)
        )

    def forward(self, z, csi):
        c = torch.cat([z.mean((-2, -1)), csi], -1)
        return z * self.model_multi(c)[..., None, None] + self.model_add(c)[..., None, None]


class _Enc(nn.Module):
    def __init__(self, ngf, top, n_down, blocks, c, extend):
        super().__init__()
        net = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, ngf, 7, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(n_down):
            a, b = min(ngf * 2**i, top), min(ngf * 2 ** (i + 1), top)
            net += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        self.net = nn.Sequential(*net)
        dim = min(ngf * 2**n_down, top)
        self.res_list = nn.ModuleList()
        for _ in range(blocks):
            self.res_list.extend([_Res(dim, False), _Mod(dim, extend)])
        self.projection = nn.Conv2d(dim, c, 3, padding=1)

    def forward(self, x, csi):
        z = self.net(x)
        for i in range(0, len(self.res_list), 2):
            z = self.res_list[i + 1](self.res_list[i](z), csi)
        return self.projection(z)


class _Dec(nn.Module):
    def __init__(self, ngf, top, n_down, blocks, c, extend):
        super().__init__()
        dim = min(ngf * 2**n_down, top)
        self.mask_conv = nn.Conv2d(c, dim, 3, padding=1, bias=False)
        self.res_list = nn.ModuleList()
        for _ in range(blocks):
            self.res_list.extend([_Res(dim, True), _Mod(dim, extend)])
        model = []
        for i in range(n_down):
            m = 2 ** (n_down - i)
            a, b = min(ngf * m, top), min(ngf * m // 2, top)
            model += [
                nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(2), nn.Conv2d(ngf, 3, 5), nn.Sigmoid()]
        self.model = nn.Sequential(*model)

    def forward(self, z, csi):
        z = self.mask_conv(z)
        for i in range(0, len(self.res_list), 2):
            z = self.res_list[i + 1](self.res_list[i](z), csi)
        return self.model(z)


class OfficialLayoutJSCC(nn.Module):
    def __init__(self, ngf=8, top_e=24, top_d=32, n_down=4, blocks_e=2, blocks_d=3, c=4, extend=1):
        super().__init__()
        self.E = _Enc(ngf, top_e, n_down, blocks_e, c, extend)
        self.G = _Dec(ngf, top_d, n_down, blocks_d, c, extend)


def _randomise(module):
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a swapped norm would show
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("extend", [1, 3])
def test_converted_model_computes_what_the_official_layout_computes(extend, tmp_path):
    official = OfficialLayoutJSCC(extend=extend).eval()
    _randomise(official)
    ckpt = {"state_dict": {f"preprocess_model.{k}": v for k, v in official.state_dict().items()}}
    ckpt["state_dict"]["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(
        1
    )  # other parts ignored
    sd, cfg = convert_official_jscc(ckpt)
    assert cfg.base_width == 8 and cfg.max_width_encoder == 24 and cfg.max_width_decoder == 32
    assert (cfg.encoder_blocks, cfg.decoder_blocks, cfg.num_downsampling, cfg.latent_channels) == (
        2,
        3,
        4,
        4,
    )
    assert cfg.channel_type == ("awgn" if extend == 1 else "rayleigh")
    ours = DeepJSCC(cfg).eval()
    ours.load_state_dict(sd, strict=True)  # every key mapped, none left over

    x = torch.rand(2, 3, 64, 48)
    csi = (
        torch.tensor([[3.0], [11.0]])
        if extend == 1
        else torch.tensor([[3.0, 0.2, -0.9], [11.0, 1.0, 0.1]])
    )
    with torch.no_grad():
        assert torch.allclose(ours.encoder(x, csi), official.E(x, csi), atol=1e-5)
        z = torch.randn(2, 4, 4, 3)
        assert torch.allclose(ours.decoder(z, csi), official.G(z, csi), atol=1e-5)

    torch.save(ckpt, tmp_path / "model.ckpt")
    assert load_official_jscc(tmp_path).config == cfg
    assert main([str(tmp_path), "--out", str(tmp_path / "jscc.safetensors")]) == 0
    assert DeepJSCC.from_pretrained(tmp_path / "jscc.safetensors").config == cfg


def test_unknown_or_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no tensor"):
        convert_official_jscc({"model.x": torch.zeros(1)})
    official = OfficialLayoutJSCC()
    sd = {f"preprocess_model.{k}": v for k, v in official.state_dict().items()}
    sd["preprocess_model.E.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ConfigError, match="no counterpart"):
        convert_official_jscc(sd)
    with pytest.raises(FileNotFoundError, match="download"):
        load_official_jscc(tmp_path / "missing")


@pytest.mark.parametrize("zipped", [True, False])
def test_lightning_written_checkpoint_converts_without_running_its_pickle(zipped, tmp_path):
    """Lightning 1.4 keys callback states by class: refused by weights_only, read here."""
    from test_refiner_checkpoints import save_lightning_checkpoint

    official = OfficialLayoutJSCC().eval()
    _randomise(official)
    state = {f"preprocess_model.{k}": v for k, v in official.state_dict().items()}
    save_lightning_checkpoint(state, tmp_path / "model.ckpt", _use_new_zipfile_serialization=zipped)
    assert main([str(tmp_path), "--out", str(tmp_path / "jscc.safetensors")]) == 0
    loaded = DeepJSCC.from_pretrained(tmp_path / "jscc.safetensors")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        csi = torch.tensor([[5.0]])
        torch.testing.assert_close(loaded.encoder(x, csi), official.E(x, csi), atol=1e-5, rtol=0)
