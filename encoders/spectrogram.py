"""Log-mel spectrograms of a padded batch of waveforms, with exact per-clip frame counts.

``LogMelSpectrogram`` feeds our spectrogram ViT; ``WhisperLogMel`` reproduces Whisper's own
features for its pretrained encoder.

``LogMelSpectrogram``'s frames are computed without centre padding, so a frame is valid only if
it lies wholly inside its clip: the zeros that pad a short clip in a batch never reach a valid
frame, and a clip gives the same valid frames alone or in a batch. Log compression and scaling
follow Whisper (log10, floor at max - 8, then ``(x + 4) / 4``), the floor taken per clip over its
own frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


class LogMelSpectrogram(nn.Module):
    """waveform ``(B, S)`` + lengths ``(B,)`` -> mel ``(B, n_mels, F)`` + frame counts ``(B,)``."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            center=False,
            power=2.0,
        )

    def n_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of whole frames inside clips of ``lengths`` samples."""
        return torch.div(lengths - self.n_fft, self.hop_length, rounding_mode="floor") + 1

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if waveform.shape[-1] < self.n_fft:
            raise ValueError(
                f"audio of {waveform.shape[-1]} samples is shorter than one FFT window "
                f"({self.n_fft} samples)"
            )
        frames = self.n_frames(lengths).clamp(min=1)  # (B,)
        with torch.autocast(waveform.device.type, enabled=False):
            mel = self.mel(waveform.float())  # (B, n_mels, F)
            log_mel = torch.log10(mel.clamp(min=1e-10))
        valid = torch.arange(log_mel.shape[-1], device=mel.device)[None, :] < frames[:, None]
        valid = valid[:, None, :]  # (B, 1, F)
        peak = log_mel.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_mel = torch.maximum(log_mel, peak - 8.0)
        log_mel = (log_mel + 4.0) / 4.0
        return log_mel.masked_fill(~valid, 0.0), frames


class WhisperLogMel(nn.Module):
    """Whisper's features: waveform ``(B, S)`` + lengths ``(B,)`` -> mel ``(B, n_mels, F)``
    for the whole window (``F = window_samples / hop_length``) + real frame counts ``(B,)``.

    As Whisper's feature extractor (Radford et al., 2022): each clip is zero-padded to the
    window, then a centred STFT (reflect padding, periodic Hann window) whose last frame is
    dropped, power, Slaney mel filters up to half the sample rate, log10 floored at the clip's
    max - 8, and ``(x + 4) / 4``. A frame is real if it starts inside the clip (the frame mask
    Hugging Face's extractor returns).
    """

    def __init__(
        self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, window_samples: int
    ):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.window_samples = window_samples
        filters = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, "slaney", "slaney"
        )  # (n_fft // 2 + 1, n_mels)
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def n_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames that start inside clips of ``lengths`` samples."""
        return torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if int(lengths.max()) > self.window_samples:
            raise ValueError(
                f"audio of {int(lengths.max())} samples exceeds the Whisper window of "
                f"{self.window_samples} samples"
            )
        waveform = waveform[:, : self.window_samples]
        inside = torch.arange(waveform.shape[-1], device=waveform.device)[None] < lengths[:, None]
        with torch.autocast(waveform.device.type, enabled=False):
            waveform = F.pad(
                waveform.float() * inside, (0, self.window_samples - waveform.shape[-1])
            )
            spec = torch.stft(
                waveform,
                self.n_fft,
                self.hop_length,
                window=self.window.float(),
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            power = spec[..., :-1].abs() ** 2  # (B, n_fft // 2 + 1, F)
            log_mel = torch.log10((self.filters.float() @ power).clamp(min=1e-10))
        peak = log_mel.amax(dim=(1, 2), keepdim=True)
        log_mel = (torch.maximum(log_mel, peak - 8.0) + 4.0) / 4.0
        return log_mel, self.n_frames(lengths).clamp(1, log_mel.shape[-1])
